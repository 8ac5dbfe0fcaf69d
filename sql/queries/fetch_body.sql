-- fetch_body: the body of version $1 (loaded only when a step needs it).
select body from postpub.versions where id = $1
