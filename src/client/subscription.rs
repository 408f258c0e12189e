//! A subscription through a server: a sequence of polls, each answered
//! with the next page of events, resumed from the next LSN on a new
//! connection when one goes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;

use super::{Client, Conn, Reply};
use crate::error::{Error, Result};
use crate::server::frame::{Code, FLAG_ERROR};
use crate::server::wire;
use crate::stream::Event;

/// Every committed event from an LSN on, in order, with no gap and no
/// duplicate, across reconnects: the remote twin of
/// [`Subscription`](crate::Subscription). A blocking iterator. It asks
/// for a page only when it has yielded the last one, so a slow reader
/// holds at most one page.
#[derive(Debug)]
pub struct RemoteSubscription {
    client: Client,
    /// The poll in flight, if any.
    poll: Option<(Arc<Conn>, u64, mpsc::Receiver<Reply>)>,
    next_lsn: u64,
    buffer: VecDeque<Event>,
    done: bool,
}

impl RemoteSubscription {
    pub(crate) fn start(client: Client, from_lsn: u64) -> Result<RemoteSubscription> {
        let mut sub = RemoteSubscription {
            client,
            poll: None,
            next_lsn: from_lsn,
            buffer: VecDeque::new(),
            done: false,
        };
        // The first poll goes at once: what is committed from here on is
        // its to deliver, and a server that is not there is an error now.
        sub.poll = Some(sub.send_poll()?);
        Ok(sub)
    }

    /// The LSN of the next event it will yield.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn send_poll(&self) -> Result<(Arc<Conn>, u64, mpsc::Receiver<Reply>)> {
        let body = wire::encode(&wire::Subscribe {
            from_lsn: self.next_lsn,
        });
        let mut last = None;
        for _ in 0..super::RESEND_MAX {
            let conn = self.client.conn()?;
            match self.client.send(&conn, Code::Subscribe, &body) {
                Ok((tag, rx)) => return Ok((conn, tag, rx)),
                Err(e @ Error::Disconnected { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| self.client.disconnected("the connection kept going")))
    }

    fn next_event(&mut self) -> Option<Result<Event>> {
        let mut lost = 0u32;
        loop {
            if let Some(e) = self.buffer.pop_front() {
                // A page starts at `next_lsn`; nothing before it is
                // yielded twice all the same.
                if e.lsn < self.next_lsn {
                    continue;
                }
                self.next_lsn = e.lsn + 1;
                return Some(Ok(e));
            }
            let (conn, tag, replies) = match self.poll.take() {
                Some(p) => p,
                None => match self.send_poll() {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                },
            };
            match conn.wait(tag, &replies) {
                Reply::Frame { flags, body } if flags & FLAG_ERROR != 0 => {
                    return Some(Err(super::wire_error(&body, self.client.socket())));
                }
                Reply::Frame { body, .. } => {
                    let page: wire::Events = match self.client.decode("events", &body) {
                        Ok(p) => p,
                        Err(e) => return Some(Err(e)),
                    };
                    // An empty page: the server is stopping; the next
                    // poll goes to whichever serves next.
                    self.buffer.extend(page.events);
                }
                Reply::Lost(reason) => {
                    lost += 1;
                    if lost > super::RESEND_MAX {
                        return Some(Err(self.client.disconnected(reason)));
                    }
                }
                Reply::Baton => {}
            }
        }
    }
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
        if let Some((conn, tag, _)) = self.poll.take() {
            self.client.cancel(&conn, tag);
        }
    }
}
