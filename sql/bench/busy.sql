-- busy: whether any version is still pending or processing (the queue holds the pending
-- ones, the claims the processing ones).
select exists (select 1 from postpub.queue)
    or exists (select 1 from postpub.claimed) as busy
