-- busy: whether any version is still pending or processing (the queue holds the pending
-- ones, the claims the processing ones).
select exists (select 1 from postpub.queue)
    or exists (select 1
                 from postpub.claims c
                 cross join lateral unnest(c.version_ids) as i(id)
                 join postpub.versions v on v.id = i.id and v.lease_token = c.token) as busy
