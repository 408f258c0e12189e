//! Record and segment-header decoding: any bytes give a record that
//! re-encodes to the same bytes, or a typed error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replaydb::wal::format;

fuzz_target!(|data: &[u8]| {
    let _ = format::decode_segment_header(data);
    if let Ok(record) = format::decode_record(data, 1 << 20) {
        let events: Vec<&[u8]> = record.events().collect();
        assert_eq!(events.len() as u32, record.count);
        // A valid record is exactly what the encoder makes of its fields,
        // unless the fuzzer found a non-canonical MessagePack width.
        let batch = format::encode_batch(record.stream, &events);
        let header = format::encode_record_header(
            &batch,
            record.first_lsn,
            record.first_version,
            record.synced_to,
        );
        let mut again = header.to_vec();
        again.extend_from_slice(&batch.payload);
        if again.len() as u64 == record.total_bytes {
            assert_eq!(&again[..], &data[..again.len()]);
        }
    }
});
