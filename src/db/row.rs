//! Typed query results: one struct per query, read by column name (a reordered `select`
//! cannot swap two fields of one type unnoticed), with `try_get` so that a column of an
//! unexpected type is an error naming the query, not a panic.

use tokio_postgres::Row;

use super::Error;

/// A struct that one query's rows read into.
pub trait FromRow: Sized {
    /// Reads one row by column name.
    fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error>;
}

/// Every row of a result as `T`; `what` names the query in the error.
pub fn all<T: FromRow>(rows: &[Row], what: &'static str) -> Result<Vec<T>, Error> {
    rows.iter()
        .map(|r| T::from_row(r).map_err(Error::query(what)))
        .collect()
}

/// The one row of a result as `T`.
pub fn one<T: FromRow>(row: &Row, what: &'static str) -> Result<T, Error> {
    T::from_row(row).map_err(Error::query(what))
}
