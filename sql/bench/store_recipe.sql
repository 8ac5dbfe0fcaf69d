-- store_recipe: the id of recipe CSS $1, stored when new.
select postpub._recipe_id($1) as id
