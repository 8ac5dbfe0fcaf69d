-- requeue_version: postpub.requeue(version $1) as the CLI calls it.
select postpub.requeue($1::bigint)
