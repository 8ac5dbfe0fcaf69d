-- current_document: the current version of document $1 for the runtime API (served by
-- the document's current-version pointer). $2: version ids the client already has (If-None-Match),
-- $3: the version number asked for (null: whichever is current), $4: the largest content
-- returned inline (bytes); larger content is streamed by document_chunks.sql.
-- The content is read only when it will be sent: not for a tombstone, a version the
-- client has, or another version. Its size is read from the stored value's header.
-- `was_live`: for a tombstone, whether it deleted a document that had been published
-- (410 Gone); a deletion of a never-published document is 404 like no document at all.
-- Returns no row when the document has no current version (never published).
with cur as (
  select v.id, v.version, v.is_tombstone, v.document,
         not (v.is_tombstone or v.id = any($2::bigint[])
              or ($3::bigint is not null and v.version <> $3::bigint)) as send,
         coalesce(c.content, v.body) as content
    from postpub.documents d
    join postpub.versions v on v.id = d.current_id
    left join postpub.collated c on c.version_id = v.id
   where d.document = $1::text
)
select cur.id, cur.version, cur.is_tombstone,
       case when cur.send and octet_length(cur.content) <= $4::bigint then cur.content end,
       case when cur.send then octet_length(cur.content)::bigint end,
       cur.is_tombstone and exists (
         select 1 from postpub.versions p
          where p.document = cur.document and p.state = 'archived' and not p.is_tombstone)
  from cur
