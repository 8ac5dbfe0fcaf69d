-- chapter_1: the current content of the demo's first chapter.
select content from postpub.current where document = 'chapter-1'
