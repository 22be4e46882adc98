//! The three stages of the document pipeline: ingest → tokenize → catalog.
//! Each reads the previous stage's object, writes its own, and records its
//! work in the `documents` table.

use diesel::prelude::*;
use slingshot::{AnyConnection, AnyError, ReadFileFn, WriteFileFn};
use std::io::{BufRead, BufReader, Read, Write};

diesel::table! {
    documents (id) {
        id -> BigInt,
        chars -> BigInt,
        words -> Nullable<BigInt>,
        top_word -> Nullable<Text>,
        status -> Text,
    }
}

/// Creates the table the stages write to (idempotent).
pub fn migrate(connection: &mut AnyConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "CREATE TABLE IF NOT EXISTS documents (
            id BIGINT PRIMARY KEY,
            chars BIGINT NOT NULL,
            words BIGINT,
            top_word TEXT,
            status TEXT NOT NULL
        )",
    )
    .execute(connection)
}

fn db_id(request: u64) -> Result<i64, AnyError> {
    i64::try_from(request).map_err(|_| format!("request {request} does not fit a BIGINT").into())
}

/// Stage 1: normalizes the uploaded text; empty documents are rejected.
#[slingshot::microservice(name = "ingest", sys_map = "file:examples/sysmaps/pipeline.json", main = false)]
fn ingest(
    request: u64,
    read_file: &ReadFileFn,
    write_file: &WriteFileFn,
    connection: &mut AnyConnection,
) -> Result<Vec<(u64, bool)>, AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    write_file("out", request)?.write_all(normalized.as_bytes())?;
    let id = db_id(request)?;
    // Delete-then-insert keeps a redelivered request idempotent on both backends.
    connection.transaction(|c| {
        diesel::delete(documents::table.find(id)).execute(c)?;
        diesel::insert_into(documents::table)
            .values((
                documents::id.eq(id),
                documents::chars.eq(normalized.len() as i64),
                documents::status.eq("ingested"),
            ))
            .execute(c)
    })?;
    Ok(vec![(request, !normalized.is_empty())])
}

/// How long a document is; the case `tokenize` routes on.
#[derive(slingshot::Case, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    #[case(rename = "short")]
    Short,
    #[case(rename = "long")]
    Long,
}

/// Stage 2: one word per line; long documents also go to review.
#[slingshot::microservice(name = "tokenize", sys_map = "file:examples/sysmaps/pipeline.json", main = false)]
fn tokenize(
    request: u64,
    read_file: &ReadFileFn,
    write_file: &WriteFileFn,
    connection: &mut AnyConnection,
) -> Result<Option<(u64, Length)>, AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    let mut out = write_file("out", request)?;
    let mut words = 0i64;
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        writeln!(out, "{word}")?;
        words += 1;
    }
    diesel::update(documents::table.find(db_id(request)?))
        .set((documents::words.eq(words), documents::status.eq("tokenized")))
        .execute(connection)?;
    let length = if words > 40 { Length::Long } else { Length::Short };
    Ok(Some((request, length)))
}

/// Stage 3: finds the most frequent word; documents where it makes up a
/// fifth or more of the text are featured.
#[slingshot::microservice(name = "catalog", sys_map = "file:examples/sysmaps/pipeline.json", main = false)]
fn catalog(
    request: u64,
    read_file: &ReadFileFn,
    write_file: &WriteFileFn,
    connection: &mut AnyConnection,
) -> Result<Vec<(u64, u8)>, AnyError> {
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    let mut total = 0u32;
    for line in BufReader::new(read_file("in", request)?).lines() {
        *counts.entry(line?).or_default() += 1;
        total += 1;
    }
    let (top, top_count) = counts
        .iter()
        .max_by_key(|(word, count)| (**count, std::cmp::Reverse(word.as_str())))
        .map(|(w, c)| (w.clone(), *c))
        .unwrap_or_default();
    writeln!(
        write_file("out", request)?,
        "{{\"id\": {request}, \"words\": {total}, \"top\": {top:?}}}"
    )?;
    diesel::update(documents::table.find(db_id(request)?))
        .set((documents::top_word.eq(&top), documents::status.eq("cataloged")))
        .execute(connection)?;
    let featured = u8::from(total > 0 && top_count * 5 >= total);
    Ok(vec![(request, featured)])
}
