-- purge_delivered: delete up to $2 events delivered to every sink more than $1 seconds ago.
-- Returns how many were deleted.
select postpub._relay_purge(make_interval(secs => $1::float8), $2::int) as deleted
