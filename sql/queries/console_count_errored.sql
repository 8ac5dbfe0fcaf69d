-- console_count_errored: how many errored versions postpub.requeue_matching would requeue
-- for the same filter (read from the versions_with_error index: errored versions always
-- carry their reason). $1 document prefix ('' = any), $2 created at or after ('' = any),
-- $3 created before ('' = any).
select count(*)
  from postpub.versions v
 where v.last_error is not null and v.state = 'errored'
   and starts_with(v.document, $1::text)
   and ($2::text = '' or v.created_at >= nullif($2::text, '')::timestamptz)
   and ($3::text = '' or v.created_at < nullif($3::text, '')::timestamptz)
