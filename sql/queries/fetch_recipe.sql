-- fetch_recipe: the CSS of recipe $1 (recipes never change, so callers cache it).
select css from postpub.recipes where id = $1
