-- console_requeue_versions: postpub.requeue_versions for the console. $1 version ids,
-- $2 the console user. Rows: the ids requeued (errored ones only).
select id from postpub.requeue_versions($1::bigint[], $2::text)
