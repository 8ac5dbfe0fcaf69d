-- console_versions: one page of the versions list, newest first, by keyset (ids below $5),
-- so a page costs the same at the millionth version as at the first; never a count.
-- Run with its parameters as constants (a fresh statement each time), so that the planner
-- drops the filters not given and picks the narrow table of the state asked for.
-- $1 state ('' = any), $2 document filter ('' = none), $3 true: $2 is a prefix, false: a
-- substring (of at most 1000 matching documents), $4 created at or after ('' = any),
-- $5 created before ('' = any), $6 ids below (null = from the newest), $7 page size,
-- $8 the filter is narrow (few documents, or a state with few versions): then the rows
-- are found by the filter and sorted ("v.id + 0" cannot walk the primary key); otherwise
-- the primary key is walked backwards until the page is full. Left to itself the planner
-- walks the key for narrow filters too, and at a million versions reads most of them
-- when the matching rows are old.
select v.id, v.document, v.version, v.state::text, v.attempts, coalesce(v.last_error, ''),
       v.is_tombstone, to_char(v.created_at, 'YYYY-MM-DD HH24:MI:SS'),
       to_char(v.state_changed_at, 'YYYY-MM-DD HH24:MI:SS')
  from postpub.versions v
 where ($1::text = ''
        -- One literal per state, not a cast of $1, so that the planner drops the arms
        -- not asked for; the small states are found through their narrow table (queue,
        -- claims) or partial index (versions_with_error).
        or ($1::text = 'post-publication' and v.state = 'post-publication'
            and v.id in (select q.version_id from postpub.queue q))
        or ($1::text = 'processing' and v.state = 'processing'
            and v.id in (select h.version_id from postpub.claimed h))
        or ($1::text = 'current' and v.state = 'current')
        or ($1::text = 'errored' and v.last_error is not null and v.state = 'errored')
        or ($1::text = 'superseded' and v.state = 'superseded')
        or ($1::text = 'archived' and v.state = 'archived'))
   and ($2::text = ''
        or ($3::bool and v.document >= $2::text and v.document < $2::text || chr(1114111))
        -- An array, not IN (subquery): IN became a hashed filter over every version.
        or (not $3::bool and v.document = any (array(select d.document
                                                       from postpub.documents d
                                                      where strpos(d.document, $2::text) > 0
                                                      limit 1000))))
   and ($4::text = '' or v.created_at >= nullif($4::text, '')::timestamptz)
   and ($5::text = '' or v.created_at < nullif($5::text, '')::timestamptz)
   and ($6::bigint is null or v.id < $6::bigint)
 order by case when $8::bool then v.id + 0 else v.id end desc
 limit $7
