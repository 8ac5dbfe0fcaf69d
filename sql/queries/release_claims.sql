-- release_claims: the claims with tokens $1 are finished (every version recorded or lost);
-- their rows go, unless a version still carries the token (see postpub._release_claims).
select postpub._release_claims($1::bigint[])
