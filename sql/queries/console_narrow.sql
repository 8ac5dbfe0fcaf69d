-- console_narrow: whether a versions filter is narrow enough to find its rows first and
-- sort them (see console_versions.sql). $1 document prefix ('' = none), $2 state ('' =
-- any). One row: documents starting with $1 (counted up to 1001; 0 without a prefix),
-- versions in state $2 (counted up to 10001, from the state's partial index; 0 for any).
select (select count(*) from (select 1 from postpub.documents d
                               where $1::text <> ''
                                 and d.document >= $1::text
                                 and d.document < $1::text || chr(1114111)
                               limit 1001) p),
       -- One literal per state (see console_versions.sql): each reads its partial index
       -- (or, for the large states, stops at the limit).
       (select count(*) from (select 1 from postpub.versions v
                               where ($2::text = 'post-publication' and v.state = 'post-publication')
                                  or ($2::text = 'processing' and v.state = 'processing')
                                  or ($2::text = 'current' and v.state = 'current')
                                  or ($2::text = 'errored' and v.state = 'errored')
                                  or ($2::text = 'superseded' and v.state = 'superseded')
                                  or ($2::text = 'archived' and v.state = 'archived')
                               limit 10001) s)
