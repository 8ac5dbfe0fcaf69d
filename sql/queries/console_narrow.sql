-- console_narrow: whether a versions filter is narrow enough to find its rows first and
-- sort them (see console_versions.sql). $1 document prefix ('' = none), $2 state ('' =
-- any). One row: documents starting with $1 (counted up to 1001; 0 without a prefix),
-- versions in state $2 (counted up to 10001, from the state's partial index; 0 for any).
select (select count(*) from (select 1 from postpub.documents d
                               where $1::text <> ''
                                 and d.document >= $1::text
                                 and d.document < $1::text || chr(1114111)
                               limit 1001) p),
       (select count(*) from (select 1 from postpub.versions v
                               where $2::text <> ''
                                 and v.state = nullif($2::text, '')::postpub.state
                               limit 10001) s)
