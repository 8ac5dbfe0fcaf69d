-- console_requeue_event: postpub.requeue_event_by for the console. $1 event id, $2 the
-- console user.
select postpub.requeue_event_by($1::uuid, $2::text)
