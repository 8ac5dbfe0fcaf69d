-- newest_event: the newest outbox id (one index page; cheap enough to poll during a drain).
select max(id) as id from postpub.outbox
