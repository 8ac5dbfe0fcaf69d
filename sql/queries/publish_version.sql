-- publish_version: postpub.publish(document $1, body $2, recipe $3) as the CLI calls it.
select postpub.publish($1::text, $2::text, $3::text) as id
