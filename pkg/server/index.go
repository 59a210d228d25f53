package server

import (
	"html/template"
	"net/http"
	"sync"
)

// Link is one page of a component, shown on the index page.
type Link struct {
	Path string
	Desc string
}

type indexSection struct {
	Component string
	Links     []Link
}

// index is the HTML page at "/": the components of this process and links to their pages.
type index struct {
	mtx      sync.Mutex
	sections []indexSection
}

func (i *index) add(component string, links ...Link) {
	i.mtx.Lock()
	defer i.mtx.Unlock()
	for k := range i.sections {
		if i.sections[k].Component == component {
			i.sections[k].Links = append(i.sections[k].Links, links...)
			return
		}
	}
	i.sections = append(i.sections, indexSection{Component: component, Links: links})
}

var indexTemplate = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Strata</title></head>
<body>
<h1>Strata</h1>
<p>The components running in this process and their pages.</p>
{{range .}}<h2>{{.Component}}</h2>
<ul>{{range .Links}}
<li><a href="{{.Path}}">{{.Desc}}</a> <code>{{.Path}}</code></li>{{end}}
</ul>
{{end}}</body></html>
`))

func (i *index) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	i.mtx.Lock()
	sections := append([]indexSection(nil), i.sections...)
	i.mtx.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = indexTemplate.Execute(w, sections)
}
