-- vacuum: fresh statistics after a reset (VACUUM cannot share a batch with the TRUNCATE:
-- it refuses to run in a transaction block).
vacuum analyze postpub.versions, postpub.documents
