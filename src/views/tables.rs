//! A view's own tables inside a snapshot file: byte keys to byte values,
//! named `view:<view>:<table>` so that views never collide.

use redb::{ReadableTable, TableDefinition};

use crate::error::{Error, Result};

fn table_name(view: &str, table: &str) -> String {
    format!("view:{view}:{table}")
}

fn storage(op: &'static str, path: &std::path::Path, e: impl Into<redb::Error>) -> Error {
    crate::snapshot::redb_err(op, path, e)
}

/// Where a view saves its state.
pub struct ViewWriter<'a> {
    pub(crate) tx: &'a redb::WriteTransaction,
    pub(crate) view: &'a str,
    pub(crate) path: &'a std::path::Path,
}

impl ViewWriter<'_> {
    /// Stores `value` under `key` in the view's table `table`.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let mut t = self
            .tx
            .open_table(def)
            .map_err(|e| storage("open view table", self.path, e))?;
        t.insert(key, value)
            .map_err(|e| storage("write view table", self.path, e))?;
        Ok(())
    }
}

/// Where a view loads its state from.
pub struct ViewReader<'a> {
    pub(crate) tx: &'a redb::ReadTransaction,
    pub(crate) view: &'a str,
    pub(crate) path: &'a std::path::Path,
}

impl ViewReader<'_> {
    /// Calls `f(key, value)` for every entry of the view's table `table`, in
    /// key order. A table never written reads as empty.
    pub fn for_each(
        &self,
        table: &str,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let t = match self.tx.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage("open view table", self.path, e)),
        };
        for entry in t
            .iter()
            .map_err(|e| storage("read view table", self.path, e))?
        {
            let (k, v) = entry.map_err(|e| storage("read view table", self.path, e))?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// The value under `key` in the view's table `table`.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let name = table_name(self.view, table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let t = match self.tx.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage("open view table", self.path, e)),
        };
        let v = t
            .get(key)
            .map_err(|e| storage("read view table", self.path, e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// An error for a value the view cannot decode, naming the snapshot,
    /// the view, the table and the key.
    pub fn bad_value(&self, table: &str, key: &[u8]) -> Error {
        Error::Snapshot {
            op: "load view",
            path: self.path.to_path_buf(),
            reason: format!(
                "view {:?} table {table:?}: undecodable value under key {:?}",
                self.view,
                String::from_utf8_lossy(key)
            ),
        }
    }
}
