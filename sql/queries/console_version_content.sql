-- console_version_content: version $1's document, body and collated output (null when it
-- has none). No row when the version does not exist.
select v.document, v.body, c.content
  from postpub.versions v
  left join postpub.collated c on c.version_id = v.id
 where v.id = $1::bigint
