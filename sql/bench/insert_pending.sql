-- insert_pending: $2 pending versions of each of documents bench-1 … bench-$1, oldest
-- versions first, with recipe $3 (so they wait for the daemon).
insert into postpub.versions (document, version, body, recipe_id)
select 'bench-' || i, v, '<p>bench ' || i || '.' || v || '</p>', $3::bigint
  from generate_series(1, $2::int) v, generate_series(1, $1::int) i
 order by v, i
