-- claim_batch: claim up to $2 versions for actor $1 with a lease of $3 seconds and the
-- fencing token $4.
-- Returns one row per claimed version (see postpub._claim in 0003_worker.sql).
select version_id, document, version, is_tombstone, recipe_id, attempts, lease_token,
       body_bytes, created_at
  from postpub._claim($1::text, $2::int, make_interval(secs => $3::float8), $4::bigint)
