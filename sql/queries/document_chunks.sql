-- document_chunks: the content of version $1 (its collated output, else its body) as
-- UTF-8 bytes in chunks of $2 bytes: (1-based offset, bytes), for the runtime API to
-- stream. Each row is sent as it is computed, so neither side holds the whole document.
-- The content is detoasted once (the materialized CTE, outer side of the lateral join);
-- each chunk is a slice of it. No ORDER BY: a sort would materialize every chunk first;
-- the rows come in offset order from generate_series, and the reader checks the offsets.
with b as materialized (
  select convert_to(coalesce(c.content, v.body), 'UTF8') as bytes
    from postpub.versions v
    left join postpub.collated c on c.version_id = v.id
   where v.id = $1::bigint
)
select g::bigint, substring(b.bytes from g for $2::int)
  from b cross join lateral generate_series(1, length(b.bytes), $2::int) g
