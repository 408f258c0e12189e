//! JSON in and out: the CLI stores JSON values as MessagePack event data.

use replaydb::Event;
use serde_json::{Value, json};

/// Encodes a JSON value as event data.
pub fn encode(value: &Value) -> Vec<u8> {
    // Serialising a serde_json::Value to MessagePack cannot fail.
    rmp_serde::to_vec(value).unwrap_or_default()
}

/// Decodes event data back to JSON, if it is MessagePack.
pub fn decode(data: &[u8]) -> Option<Value> {
    rmp_serde::from_slice(data).ok()
}

/// One event as a JSON object: `lsn`, `stream`, `version`, `data` (the
/// original JSON value), or `data_hex` for data that is not MessagePack.
pub fn event_json(e: &Event) -> Value {
    match decode(&e.data) {
        Some(data) => json!({"lsn": e.lsn, "stream": e.stream, "version": e.version, "data": data}),
        None => json!({
            "lsn": e.lsn, "stream": e.stream, "version": e.version, "data": null,
            "data_hex": e.data.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }),
    }
}
