//! A subscription through a server: pages of events pushed by the
//! server, resumed from the next LSN on a new connection when one goes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;

use super::{Client, Conn, Reply};
use crate::error::{Error, Result};
use crate::server::frame::{Code, FLAG_ERROR, FLAG_MORE};
use crate::server::wire;
use crate::stream::Event;

/// Every committed event from an LSN on, in order, with no gap and no
/// duplicate, across reconnects: the remote twin of
/// [`Subscription`](crate::Subscription). A blocking iterator.
#[derive(Debug)]
pub struct RemoteSubscription {
    client: Client,
    conn: Arc<Conn>,
    tag: u64,
    replies: mpsc::Receiver<Reply>,
    next_lsn: u64,
    buffer: VecDeque<Event>,
    done: bool,
}

impl RemoteSubscription {
    pub(crate) fn start(client: Client, from_lsn: u64) -> Result<RemoteSubscription> {
        let (conn, tag, replies) = open(&client, from_lsn)?;
        Ok(RemoteSubscription {
            client,
            conn,
            tag,
            replies,
            next_lsn: from_lsn,
            buffer: VecDeque::new(),
            done: false,
        })
    }

    /// The LSN of the next event it will yield.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn resume(&mut self) -> Result<()> {
        let (conn, tag, replies) = open(&self.client, self.next_lsn)?;
        (self.conn, self.tag, self.replies) = (conn, tag, replies);
        Ok(())
    }

    fn next_event(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                // After a resume the server starts at `next_lsn`; nothing
                // before it is yielded twice all the same.
                if e.lsn < self.next_lsn {
                    continue;
                }
                self.next_lsn = e.lsn + 1;
                return Some(Ok(e));
            }
            match self.replies.recv() {
                Ok(Reply::Frame { flags, body }) if flags & FLAG_ERROR != 0 => {
                    return Some(Err(super::wire_error(&body, self.client.socket())));
                }
                Ok(Reply::Frame { flags, body }) => {
                    let page: wire::Events = match self.client.decode("events", &body) {
                        Ok(p) => p,
                        Err(e) => return Some(Err(e)),
                    };
                    self.buffer.extend(page.events);
                    if flags & FLAG_MORE == 0 && self.buffer.is_empty() {
                        // The server ended it (it is stopping): carry on
                        // from the next one that serves.
                        if let Err(e) = self.resume() {
                            return Some(Err(e));
                        }
                    }
                }
                Ok(Reply::Lost(_)) | Err(_) => {
                    if let Err(e) = self.resume() {
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

fn open(client: &Client, from_lsn: u64) -> Result<(Arc<Conn>, u64, mpsc::Receiver<Reply>)> {
    let body = wire::encode(&wire::Subscribe { from_lsn });
    let mut last = None;
    for _ in 0..super::RESEND_MAX {
        let conn = client.conn()?;
        match client.send(&conn, Code::Subscribe, &body) {
            Ok((tag, rx)) => return Ok((conn, tag, rx)),
            Err(e @ Error::Disconnected { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| client.disconnected("the connection kept going")))
}

impl Iterator for RemoteSubscription {
    type Item = Result<Event>;

    /// Blocks until the next event. After an error, `None`.
    fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        let next = self.next_event();
        if matches!(next, Some(Err(_)) | None) {
            self.done = true;
        }
        next
    }
}

impl Drop for RemoteSubscription {
    fn drop(&mut self) {
        self.client.cancel(&self.conn, self.tag);
    }
}
