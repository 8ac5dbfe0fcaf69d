-- delete_document: postpub.delete(document $1) as the CLI calls it.
select postpub.delete($1::text) as id
