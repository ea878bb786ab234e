package tideway

import "strings"

// Block is one SSE block: the fields seen up to a blank line.
type Block struct {
	ID      string
	HasID   bool
	Event   string
	Data    string
	HasData bool
	Fields  map[string]string
}

// ParseBlocks returns the complete blocks at the start of buf and the text that does
// not end a block yet. CRLF, CR and LF all end a line; a CR at the very end waits for
// a possible LF.
func ParseBlocks(buf string) ([]Block, string) {
	var blocks []Block
	current := Block{Fields: map[string]string{}}
	start, consumed := 0, 0
	for i := 0; i < len(buf); i++ {
		c := buf[i]
		if c != '\n' && c != '\r' {
			continue
		}
		if c == '\r' && i+1 == len(buf) {
			break
		}
		line := buf[start:i]
		if c == '\r' && buf[i+1] == '\n' {
			i++
		}
		start = i + 1
		if line == "" {
			blocks = append(blocks, current)
			current = Block{Fields: map[string]string{}}
			consumed = start
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
		case "id":
			current.ID, current.HasID = value, true
		case "event":
			current.Event = value
		case "data":
			if current.HasData {
				current.Data += "\n" + value
			} else {
				current.Data, current.HasData = value, true
			}
		default:
			current.Fields[name] = value
		}
	}
	return blocks, buf[consumed:]
}
