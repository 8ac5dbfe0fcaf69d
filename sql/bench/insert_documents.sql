-- insert_documents: documents bench-1 … bench-$1, each with $2 versions already numbered.
insert into postpub.documents (document, last_version)
select 'bench-' || i, $2::int from generate_series(1, $1::int) i
