-- console_diff_versions: the two newest version ids of doc-0000100 (the diff the bench
-- times), newest first.
select id from postpub.versions where document = 'doc-0000100' order by version desc limit 2
