-- reset: empty the tables between benchmark runs (TRUNCATE keeps runs comparable).
truncate postpub.transition_log, postpub.outbox, postpub.collated, postpub.versions,
         postpub.documents, postpub.recipes, postpub.queue, postpub.claims
         restart identity cascade
