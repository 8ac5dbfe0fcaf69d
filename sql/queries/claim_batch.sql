-- claim_batch: claim up to $2 versions for actor $1 with a lease of $3 seconds and the
-- fencing token $4.
-- One row of arrays, one element per claimed version (see postpub._claim in
-- 0010_lean_claim_and_finish.sql): a batch of 500 as one row rather than 500 costs both
-- sides less per version.
select coalesce(array_agg(c.version_id), '{}') as version_ids,
       coalesce(array_agg(c.document), '{}') as documents,
       coalesce(array_agg(c.version), '{}') as versions,
       coalesce(array_agg(c.is_tombstone), '{}') as tombstones,
       coalesce(array_agg(c.recipe_id), '{}') as recipe_ids,
       coalesce(array_agg(c.attempts), '{}') as attempts,
       coalesce(array_agg(c.lease_token), '{}') as lease_tokens,
       coalesce(array_agg(c.body_bytes), '{}') as body_bytes,
       coalesce(array_agg(c.created_at), '{}') as created_at
  from postpub._claim($1::text, $2::int, make_interval(secs => $3::float8), $4::bigint) c
