-- console_audit: the $1 latest console actions. Rows: at (text), actor, action, target,
-- rows affected.
select at::text, actor, action, target, affected
  from postpub.audit
 order by id desc
 limit $1
