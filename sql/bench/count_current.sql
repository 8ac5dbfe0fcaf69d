-- count_current: versions that are current.
select count(*) as current from postpub.versions where state = 'current'
