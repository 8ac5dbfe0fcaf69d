-- publish_latency: one small version of document $1 with recipe CSS $2, for the latency run.
select postpub.publish($1, '<p>latency</p>', $2) as id
