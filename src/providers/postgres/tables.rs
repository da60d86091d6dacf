//! What a verify table holds: its row count and a checksum of its content,
//! computed in the server in one pass (order-independent: the sum of each
//! row's hash), so it needs no memory in reprise whatever the table's size.

use tokio_postgres::GenericClient;

use super::{PgError, qualified};
pub use crate::providers::database::TableMeasure;

/// Measures `schema.name` in the client's current transaction.
pub async fn measure(client: &impl GenericClient, schema: &str, name: &str) -> Result<TableMeasure, PgError> {
    let sql = format!(
        "SELECT count(*)::bigint, \
         coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text \
         FROM {} AS t",
        qualified(schema, name)
    );
    let row = client.query_one(sql.as_str(), &[]).await?;
    Ok(TableMeasure {
        schema: schema.into(),
        name: name.into(),
        rows: row.get(0),
        checksum: row.get(1),
        indexes: vec![],
        sequences: vec![],
    })
}

/// The measure plus the table's indexes and owned sequences, as a backup records them.
pub async fn measure_with_objects(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<TableMeasure, PgError> {
    let measured = measure(client, schema, name).await?;
    let objects = measure_objects(client, schema, name).await?;
    Ok(TableMeasure {
        rows: measured.rows,
        checksum: measured.checksum,
        ..objects
    })
}

/// The table's indexes and owned sequences (rows and checksum left empty).
async fn measure_objects(client: &impl GenericClient, schema: &str, name: &str) -> Result<TableMeasure, PgError> {
    let mut m = TableMeasure {
        schema: schema.into(),
        name: name.into(),
        rows: 0,
        checksum: String::new(),
        indexes: vec![],
        sequences: vec![],
    };
    let table = qualified(schema, name);
    m.indexes = client
        .query(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    m.sequences = client
        .query(
            "SELECT s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid \
             WHERE d.refobjid = $1::text::regclass AND d.classid = 'pg_class'::regclass \
             AND s.relkind = 'S' AND d.deptype IN ('a', 'i') ORDER BY 1",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(m)
}

/// Whether `schema.name` exists (as a table, view or other relation).
pub async fn exists(client: &impl GenericClient, schema: &str, name: &str) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2)",
            &[&schema, &name],
        )
        .await?;
    Ok(row.get(0))
}

/// The user tables of the connected database (partitions counted with their
/// parent), in order.
pub async fn list(client: &impl GenericClient) -> Result<Vec<(String, String)>, PgError> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The row count of `schema.name` in the client's current transaction.
pub async fn count(client: &impl GenericClient, schema: &str, name: &str) -> Result<i64, PgError> {
    let sql = format!("SELECT count(*)::bigint FROM {}", qualified(schema, name));
    Ok(client.query_one(sql.as_str(), &[]).await?.get(0))
}

/// What a backup records of every table: its row count, indexes and owned
/// sequences (no checksum: those are for the verify tables).
pub async fn contents(client: &impl GenericClient) -> Result<Vec<TableMeasure>, PgError> {
    let mut out = vec![];
    for (schema, name) in list(client).await? {
        let mut m = measure_objects(client, &schema, &name).await?;
        m.rows = count(client, &schema, &name).await?;
        out.push(m);
    }
    Ok(out)
}
