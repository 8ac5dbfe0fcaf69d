-- rescue_expired: return versions whose lease expired to post-publication (or errored after
-- $2 attempts), recording actor $1. Returns (version_id, document, state, held_by).
select version_id, document, state, held_by from postpub._rescue($1::text, $2::int)
