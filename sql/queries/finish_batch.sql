-- finish_batch: record the outcome of claimed versions, in one transaction.
-- $1 actor, $2 ids, $3 lease tokens, $4 outcomes ('publish' | 'error' | 'retry' |
-- 'release'), $5 errors, $6 retry delays in seconds, $7 collated output, $8 warnings
-- (newline-separated); $5 to $8 may be empty when no version has one; $9 documents and
-- $10 version numbers, as the claim returned them. Returns one row of two arrays (see
-- postpub._finish in 0013_finish_by_document.sql): per version finished, its new state,
-- or 'lost' when its lease is no longer the caller's. Versions left out could not be
-- finished yet (their document is locked).
select f.version_ids, f.results
  from postpub._finish($1::text, $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                       $6::float8[], $7::text[], $8::text[], $9::text[], $10::int[]) f
