-- console_requeue_matching: postpub.requeue_matching for the console. $1 document prefix,
-- $2 created at or after ('' = any), $3 created before ('' = any), $4 the console user.
select postpub.requeue_matching($1::text, nullif($2::text, '')::timestamptz,
                                nullif($3::text, '')::timestamptz, $4::text)
