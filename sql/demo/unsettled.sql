-- unsettled: versions still pending or processing.
select count(*) as pending from postpub.versions where state in ('post-publication', 'processing')
