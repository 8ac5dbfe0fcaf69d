-- requeue_errored: postpub.requeue_errored(document $1, null = all) as the CLI calls it.
select postpub.requeue_errored($1::text) as requeued
