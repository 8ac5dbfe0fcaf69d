-- renew_leases: extend the leases on ids $1 held with tokens $2 by $3 seconds.
-- Returns the ids renewed; a missing id has lost its lease.
select id from postpub._renew($1::bigint[], $2::bigint[], make_interval(secs => $3::float8)) as id
