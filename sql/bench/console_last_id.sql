-- console_last_id: the newest version id (0 when none), where the next fill starts.
select coalesce(max(id), 0) from postpub.versions
