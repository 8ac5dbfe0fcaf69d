-- count_current: documents with a current version.
select count(*) as current from postpub.documents where current_id is not null
