-- console_narrow: whether a versions filter is narrow enough to find its rows first and
-- sort them (see console_versions.sql). $1 document prefix ('' = none), $2 state ('' =
-- any). One row: documents starting with $1 (counted up to 1001; 0 without a prefix),
-- versions in state $2 (counted up to 10001; 0 for any).
select (select count(*) from (select 1 from postpub.documents d
                               where $1::text <> ''
                                 and d.document >= $1::text
                                 and d.document < $1::text || chr(1114111)
                               limit 1001) p),
       -- One literal per state (see console_versions.sql): pending and processing read
       -- their narrow tables, errored its partial index; the large states stop at the
       -- limit.
       case $2::text
         when 'post-publication' then (select count(*) from (select 1 from postpub.queue limit 10001) s)
         when 'processing' then (select count(*) from postpub.claimed)
         when '' then 0
         else (select count(*) from (select 1 from postpub.versions v
                                      where ($2::text = 'errored' and v.last_error is not null
                                             and v.state = 'errored')
                                         or ($2::text = 'current' and v.state = 'current')
                                         or ($2::text = 'superseded' and v.state = 'superseded')
                                         or ($2::text = 'archived' and v.state = 'archived')
                                      limit 10001) s)
       end
