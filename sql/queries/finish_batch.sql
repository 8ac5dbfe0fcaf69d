-- finish_batch: record the outcome of claimed versions, in one transaction.
-- $1 actor, $2 ids, $3 lease tokens, $4 outcomes ('publish' | 'error' | 'retry' |
-- 'release'), $5 errors, $6 retry delays in seconds, $7 collated output, $8 warnings
-- (newline-separated). Returns (version_id, result): the new state, or 'lost'.
-- As one row of two arrays (see claim_batch.sql).
select coalesce(array_agg(f.version_id), '{}') as version_ids,
       coalesce(array_agg(f.result), '{}') as results
  from postpub._finish($1::text, $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                       $6::float8[], $7::text[], $8::text[]) f
