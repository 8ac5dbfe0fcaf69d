-- current_document: the current version of document $1 for the runtime API (served by
-- the versions_one_current index). $2: version ids the client already has (If-None-Match),
-- $3: the version number asked for (null: whichever is current). The content is read only
-- when it will be sent: not for a tombstone, a version the client has, or another version.
-- Returns no row when the document has no current version (never published).
select v.id, v.version, v.is_tombstone,
       case when v.is_tombstone or v.id = any($2::bigint[])
                 or ($3::bigint is not null and v.version <> $3::bigint) then null
            else coalesce(c.content, v.body) end
  from postpub.versions v
  left join postpub.collated c on c.version_id = v.id
 where v.document = $1::text and v.state = 'current'
