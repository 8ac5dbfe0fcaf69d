-- requeue_event: postpub.requeue_event(event id $1) as the CLI calls it.
select postpub.requeue_event($1::uuid)
