//! A view's own tables in the store: byte keys to byte values, named
//! `view:<view>:<table>` so that views never collide. Every value is
//! stored behind a CRC-32 of the table name, the key and the value, and
//! checked when it is read back.

use std::path::Path;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{Error, Result};
use crate::store::codec;
use crate::store::redb_err;

fn table_name(view: &str, table: &str) -> String {
    format!("view:{view}:{table}")
}

/// Where a view's tables are read from: a read transaction (readers, at
/// one commit) or the open write transaction (commands, and a view
/// reading its own state while it applies).
#[derive(Clone, Copy)]
pub(crate) enum TablesAt<'a> {
    Read(&'a ReadTransaction),
    Write(&'a WriteTransaction),
}

/// A view's tables, for writing, inside the transaction that applies the
/// events (handed to [`View::apply`](crate::View::apply)).
pub struct ViewTables<'a> {
    tx: &'a WriteTransaction,
    view: &'a str,
    path: &'a Path,
}

impl<'a> ViewTables<'a> {
    pub(crate) fn new(tx: &'a WriteTransaction, view: &'a str, path: &'a Path) -> ViewTables<'a> {
        ViewTables { tx, view, path }
    }

    /// Stores `value` under `key` in the view's table `table`.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let mut t = self
            .tx
            .open_table(def)
            .map_err(|e| redb_err("open view table", self.path, e))?;
        t.insert(key, codec::encode_view_value(table, key, value).as_slice())
            .map_err(|e| redb_err("write view table", self.path, e))?;
        Ok(())
    }

    /// Removes `key` from the view's table `table`; whether it was there.
    pub fn remove(&mut self, table: &str, key: &[u8]) -> Result<bool> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let mut t = self
            .tx
            .open_table(def)
            .map_err(|e| redb_err("open view table", self.path, e))?;
        let removed = t
            .remove(key)
            .map_err(|e| redb_err("write view table", self.path, e))?
            .is_some();
        Ok(removed)
    }

    /// The same tables, for reading what this transaction has written.
    pub fn read(&self) -> ViewTablesRead<'_> {
        ViewTablesRead {
            at: TablesAt::Write(self.tx),
            view: self.view,
            path: self.path,
        }
    }
}

/// What walks a table's entries: `(key, value)` to whether to go on.
type EntryVisitor<'f> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'f;

/// A view's tables, for reading, at one commit.
pub struct ViewTablesRead<'a> {
    pub(crate) at: TablesAt<'a>,
    pub(crate) view: &'a str,
    pub(crate) path: &'a Path,
}

impl ViewTablesRead<'_> {
    /// The value under `key` in the view's table `table`.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        match self.at {
            TablesAt::Read(tx) => match tx.open_table(def) {
                Ok(t) => self.get_in(&t, table, key),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(e) => Err(redb_err("open view table", self.path, e)),
            },
            TablesAt::Write(tx) => {
                // Opening creates a missing table (empty, in the view's
                // own namespace, committed with the round): cheaper than
                // listing every table to avoid it, on every command's path.
                let t = tx
                    .open_table(def)
                    .map_err(|e| redb_err("open view table", self.path, e))?;
                self.get_in(&t, table, key)
            }
        }
    }

    /// Calls `f(key, value)` for every entry of the view's table `table`
    /// from `from` on (the start if `None`), in key order, until it
    /// returns `false`. A table never written reads as empty.
    pub fn for_each_from(
        &self,
        table: &str,
        from: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        match self.at {
            TablesAt::Read(tx) => match tx.open_table(def) {
                Ok(t) => self.each_in(&t, table, from, &mut f),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(()),
                Err(e) => Err(redb_err("open view table", self.path, e)),
            },
            TablesAt::Write(tx) => {
                let t = tx
                    .open_table(def)
                    .map_err(|e| redb_err("open view table", self.path, e))?;
                self.each_in(&t, table, from, &mut f)
            }
        }
    }

    /// Calls `f(key, value)` for every entry of the view's table `table`,
    /// in key order.
    pub fn for_each(
        &self,
        table: &str,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_from(table, None, |k, v| f(k, v).map(|()| true))
    }

    /// An error for a value the view cannot decode, naming the store, the
    /// view, the table and the key.
    pub fn bad_value(&self, table: &str, key: &[u8]) -> Error {
        Error::Store {
            op: "read view",
            path: self.path.to_path_buf(),
            reason: format!(
                "view {:?} table {table:?}: undecodable value under key {:?}",
                self.view,
                String::from_utf8_lossy(key)
            ),
        }
    }

    fn damaged(&self, table: &str, key: &[u8], why: String) -> Error {
        Error::Store {
            op: "read view",
            path: self.path.to_path_buf(),
            reason: format!(
                "view {:?} table {table:?} key {:?}: {why}",
                self.view,
                String::from_utf8_lossy(key)
            ),
        }
    }

    fn get_in(
        &self,
        t: &impl ReadableTable<&'static [u8], &'static [u8]>,
        table: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let Some(v) = t
            .get(key)
            .map_err(|e| redb_err("read view table", self.path, e))?
        else {
            return Ok(None);
        };
        let value = codec::decode_view_value(table, key, v.value())
            .map_err(|why| self.damaged(table, key, why))?;
        Ok(Some(value.to_vec()))
    }

    fn each_in(
        &self,
        t: &impl ReadableTable<&'static [u8], &'static [u8]>,
        table: &str,
        from: Option<&[u8]>,
        f: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let iter = match from {
            Some(from) => t.range::<&[u8]>(from..),
            None => t.iter(),
        }
        .map_err(|e| redb_err("read view table", self.path, e))?;
        for entry in iter {
            let (k, v) = entry.map_err(|e| redb_err("read view table", self.path, e))?;
            let key = k.value();
            let value = codec::decode_view_value(table, key, v.value())
                .map_err(|why| self.damaged(table, key, why))?;
            if !f(key, value)? {
                break;
            }
        }
        Ok(())
    }
}
