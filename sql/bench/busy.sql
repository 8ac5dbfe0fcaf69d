-- busy: whether any version is still pending or processing (the queue and the leases hold
-- exactly those).
select exists (select 1 from postpub.queue) or exists (select 1 from postpub.leases) as busy
