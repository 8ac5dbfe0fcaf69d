-- console_vacuum: statistics and the visibility map for the console bench's tables, as
-- autovacuum would have left them.
vacuum analyze postpub.versions, postpub.documents, postpub.transition_log, postpub.outbox
