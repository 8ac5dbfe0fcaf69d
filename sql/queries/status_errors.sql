-- status_errors: the $1 most recent errored versions with their reasons.
select id, document, version, attempts, coalesce(last_error, '') as last_error,
       state_changed_at::text as at
  from postpub.versions
 where state = 'errored'
 order by state_changed_at desc, id desc
 limit $1
