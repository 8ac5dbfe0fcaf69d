-- busy: whether any version is still pending or processing.
select exists (select 1 from postpub.versions where state = 'post-publication')
       or exists (select 1 from postpub.versions where state = 'processing') as busy
